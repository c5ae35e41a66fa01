"""The shared vocabulary of every stage: worlds, traces, the search tool protocol, IO and the CLI."""

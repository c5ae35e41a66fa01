"""Documents, embedders, dense and lexical indexes, and the one Retriever every stage shares."""

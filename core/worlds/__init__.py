"""The synthetic worlds and everything that knows their shape: the generator and its question templates
(world.py), the phrasings of the oracle's traces (templates.py), the written-out steps and the check of
an answer's steps against its quotes (steps.py), the drills of those steps (drills.py), and linked support
for passages titled by their entity (linked.py). The rest of cogcore works on any corpus; what is here
plugs into it: as verifiers the engine's retries are given, and drills the trainer mixes in."""

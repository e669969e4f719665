"""The experiment folder: its one owner (`folder.Experiment`), the checks before one is created, its preparation,
its run lock, Tune's files read back (`results`), object storage, trust, and the ranking and its tables."""

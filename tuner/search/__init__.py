"""The search the driver runs: the space, the searcher and its running-trial limit, the ASHA scheduler, Tune's
callbacks, the Tuner built from them (`build`), the Ray cluster, and the Optuna study."""

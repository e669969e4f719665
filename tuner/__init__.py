"""tuner: hyperparameter search for preference fine-tuning (DPO, ORPO) of small LLMs."""

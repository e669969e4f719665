"""What runs inside a trial process: the Tune function (`trainable`), the model backends, the methods' TRL
classes and arguments, the trainers with the one-pass evaluation, the log-probs, the shared reference, reporting to
Tune, and the device and library-version glue."""

"""Reading a tuner experiment folder: ranking trials, drawing their curves, writing a report."""

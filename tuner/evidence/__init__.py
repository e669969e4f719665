"""What a search proves: the per-pair scores and measures (`quality`), the test split scored at the end
(`scoring`), the verdict with its statistics, and the closing lines of a search."""

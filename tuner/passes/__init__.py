"""The base model's and the finished adapters' passes over the pairs outside the trials (the shared reference, the
base model's scores, the test scoring), run where the trials run and kept across searches: `tasks` runs them,
`cache` keeps them by a fingerprint of what determines them, `shadow` scores the test split while trials run."""

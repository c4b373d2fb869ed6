"""The staged tuning recipe: the checks an expert runs before and between searches."""

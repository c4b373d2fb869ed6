"""The recipe's stages, one module each (``automl.recipe.plan`` orders them)."""

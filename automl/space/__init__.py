"""Search spaces: YAML files of fixed values and searchable parameters."""

from automl.space.params import DefaultSuggester, FixedSuggester, OptunaSuggester, Param, Suggester
from automl.space.space import SearchSpace

__all__ = ["DefaultSuggester", "FixedSuggester", "OptunaSuggester", "Param", "SearchSpace", "Suggester"]

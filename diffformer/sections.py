"""The base of every recipe section's schema: strict about what a YAML value may silently become.

- unknown keys are errors (a typo is never ignored);
- numbers must be finite (`.inf` and `.nan` are YAML floats, never a sensible setting);
- a boolean is not a number: YAML reads yes/no/on/off as booleans, and pydantic would
  otherwise take `steps: yes` as 1.
"""

import types
import typing

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

# Upper bounds that keep a typo (an extra digit or three) from allocating the machine away.
MAX_WIDTH = 1 << 16  # d_model, hidden widths
MAX_COUNT = 1 << 12  # layers, heads
MAX_TOKENS = 1 << 24  # vocabulary ids, sequence lengths
MAX_SEED = (1 << 32) - 1  # NumPy and PyTorch both take seeds of this size


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, data):
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(name)
                if isinstance(value, bool) and _accepts_numbers_not_booleans(field.annotation):
                    # The error names its field in ctx: recipe messages put it into the dotted path.
                    raise PydanticCustomError(
                        BOOLEAN_NOT_NUMBER,
                        "expected a number, got the boolean {value} (YAML reads yes/no/on/off as booleans)",
                        {"field": name, "value": str(value).lower()},
                    )
        return data


BOOLEAN_NOT_NUMBER = "boolean_not_number"


def _accepts_numbers_not_booleans(annotation) -> bool:
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    members = members or (annotation,)
    return bool not in members and any(member in (int, float) for member in members)

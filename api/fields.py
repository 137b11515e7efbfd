"""Field types the API's request schemas share: ids and numbers the database can hold, text it can store."""
from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from annotate.models import MAX_ID, MAX_NUMBER


def _storable(text: str) -> str:
    """Text PostgreSQL and SQLite both keep: no NUL character, no lone surrogate (neither is valid text)."""
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode text (a lone surrogate)") from None
    return text


Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Number = Annotated[int, Field(ge=0, le=MAX_NUMBER)]
Text = Annotated[str, Field(max_length=20_000), AfterValidator(_storable)]
Name = Annotated[str, Field(max_length=300), AfterValidator(_storable)]
Reason = Annotated[str, Field(max_length=2000), AfterValidator(_storable)]  # a recorded why (VersionChange.reason)
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]

"""Tables (a pandas DataFrame, a .csv or a .parquet file) -> the D4RL row arrays that `sources` validates and
converts like those of an npz file.

`columns` maps fields to columns: observations, actions and next_observations take one column or a list of
them (a column whose cells are arrays, as parquet stores lists, holds the whole field); rewards, terminals,
timeouts and episode_id take one. A field that is not mapped is the column of its own name, else (the
observations, actions and next_observations) every column named FIELD_*, FIELD/* or FIELD.* in the table's
order. Without timeouts, an episode_id column gives the episode ends (`validation.Report.check_episode_ids`).
pandas, and pyarrow for parquet, are imported only when a table is read: they are the `tables` extra.
"""

import difflib
import importlib
import pathlib
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from iql_tf.data import validation
from iql_tf.errors import UserError

TABLE_SUFFIXES = (".csv", ".parquet")
VECTOR_FIELDS = ("observations", "actions", "next_observations")
REQUIRED_FIELDS = ("observations", "actions", "rewards", "terminals")
FIELDS = (*REQUIRED_FIELDS, "timeouts", "next_observations", "episode_id")
OBSERVATION_FIELDS = ("observations", "next_observations")  # a column each part of, FIELD/PART
INSTALL = 'pip install "iql-tf[tables]"'
_PREFIX_SEPARATORS = ("_", "/", ".")
_NUMBERED = re.compile(r"(.+?)[_./]?\d+$")  # obs_0, act.1, q/12: a column of a field spread over columns

Columns = Optional[Mapping[str, Union[str, Sequence[str]]]]


def read_table(path: pathlib.Path, columns: Columns = None) -> Dict[str, np.ndarray]:
    """The row arrays of a .csv or .parquet file (see `frame_arrays`)."""
    return frame_arrays(_load(path), str(path), columns)


def frame_arrays(frame: Any, where: str, columns: Columns = None) -> Dict[str, np.ndarray]:
    """The row arrays of a DataFrame, keyed by field: numbers as float64 or bool, episode ids as they are (or
    as strings). A missing, misnamed or non-numeric column is one UserError naming `where`."""
    pandas = _require("pandas", "reading a table")
    if not isinstance(frame, pandas.DataFrame):
        raise UserError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}")
    if not all(isinstance(name, str) for name in frame.columns):
        frame = frame.rename(columns=str)
    names = list(frame.columns)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"{where}: column name(s) {repeated} appear more than once; rename them apart")
    mapping = _checked_mapping(where, columns)
    # Observations of parts: a column per part, named FIELD/PART (cells of arrays, or numbers), one of images at
    # least (else FIELD/0, FIELD/1, ... are one vector spread over columns).
    parted = {field: [name for name in names if name.startswith(f"{field}/")] for field in OBSERVATION_FIELDS
              if field not in mapping and field not in names}
    parted = {field: picked for field, picked in parted.items() if any(
        _holds_arrays(frame[name]) and np.ndim(frame[name].iloc[0]) == 3 for name in picked)}
    chosen = {field: parted.get(field) or _columns_of(where, field, names, mapping) for field in FIELDS}
    if chosen["timeouts"]:
        chosen["episode_id"] = []  # episode ids only stand in for missing timeouts
    missing = [field for field in REQUIRED_FIELDS if not chosen[field]]
    if not chosen["timeouts"] and not chosen["episode_id"]:
        missing.append("timeouts")
    if missing:
        raise _missing_columns(where, names, missing)
    return {field: {name.split("/", 1)[1]: _values(where, frame, field, [name]) for name in picked}
            if parted.get(field) else _values(where, frame, field, picked)
            for field, picked in chosen.items() if picked}


def _load(path: pathlib.Path) -> Any:
    pandas = _require("pandas", f"reading {path.suffix} tables")
    try:
        if path.suffix.lower() == ".csv":
            return pandas.read_csv(path)
        _require("pyarrow", "reading .parquet tables")
        return pandas.read_parquet(path, engine="pyarrow")
    except (ValueError, OSError, UnicodeDecodeError, pandas.errors.ParserError, pandas.errors.EmptyDataError
            ) as error:  # pyarrow's ArrowInvalid is a ValueError, its IO errors OSErrors
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"{path}: cannot be read as {path.suffix} ({reason}); the file is corrupt, truncated or "
                        "not such a table") from error


def _require(module: str, purpose: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise UserError(f"{purpose} needs {module}, which is not installed: {INSTALL}") from error


def _checked_mapping(where: str, columns: Columns) -> Dict[str, List[str]]:
    """`columns` as field -> list of column names, after checking its fields and the number of columns."""
    if columns is None:
        return {}
    if not isinstance(columns, Mapping):
        raise UserError(f"{where}: columns {columns!r} must be a dict of field -> column name(s), e.g. "
                        "{'rewards': 'reward'}")
    mapping = {}
    for field, value in columns.items():
        if field not in FIELDS:
            close = difflib.get_close_matches(str(field), FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{where}: columns names the unknown field {field!r} (fields: {', '.join(FIELDS)}){hint}")
        picked = [value] if isinstance(value, str) else value
        if not isinstance(picked, Sequence) or not picked or not all(isinstance(name, str) for name in picked):
            raise UserError(f"{where}: columns[{field!r}] = {value!r} must be a column name or a list of them")
        if field not in VECTOR_FIELDS and len(picked) != 1:
            raise UserError(f"{where}: columns[{field!r}] = {value!r} names {len(picked)} columns; {field} is "
                            "one column")
        mapping[field] = list(picked)
    return mapping


def _columns_of(where: str, field: str, names: List[str], mapping: Dict[str, List[str]]) -> List[str]:
    """The columns holding `field`: mapped, else of its own name, else (vector fields) prefixed by it."""
    if field in mapping:
        for name in mapping[field]:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise UserError(f"{where}: columns[{field!r}] names column {name!r}, which the table lacks "
                                f"(columns: {', '.join(names)}){hint}")
        return mapping[field]
    if field in names:
        return [field]
    if field in VECTOR_FIELDS:
        return [name for name in names if name.startswith(tuple(field + sep for sep in _PREFIX_SEPARATORS))]
    return []


def _missing_columns(where: str, names: List[str], missing: List[str]) -> UserError:
    """One line: the fields without a column, the table's columns, the likely ones and the mapping to give."""
    guesses = {field: _guess(field, names) for field in missing}
    mapping = {}
    for field, guess in guesses.items():
        mapping.update(guess or {field: "COLUMN"})
    labels = ", ".join("'timeouts' (nor 'episode_id')" if field == "timeouts" else repr(field) for field in missing)
    message = f"{where}: no column {labels} (columns: {', '.join(names)})"
    found = [(field, guess) for field, guess in guesses.items() if guess]
    if found:
        meant = [_columns_text(next(iter(guess.values()))) for _, guess in found]
        if len(missing) > 1:
            meant = [f"{text} for {next(iter(guess))!r}" for text, (_, guess) in zip(meant, found)]
        message += f"; did you mean {', '.join(meant)}?"
    else:
        message += "; add it, or"
    message += (f" map {'it' if len(missing) == 1 else 'them'} with make_dataset.columns = {mapping!r} "
                "(from_pandas(..., columns=...))")
    if "timeouts" in missing:
        message += (f"; timeouts: {validation.FIELD_MEANINGS['timeouts']}; or an episode_id column (one id per "
                    "episode, its rows together) gives them")
    return UserError(message)


def _guess(field: str, names: List[str]) -> Dict[str, Union[str, List[str]]]:
    """The likely mapping of a missing field (timeouts: of timeouts, else of episode ids), or {}."""
    if field == "timeouts":
        return _guess_columns("timeouts", names) or _guess_columns("episode_id", names)
    return _guess_columns(field, names)


def _guess_columns(field: str, names: List[str]) -> Dict[str, Union[str, List[str]]]:
    if field in VECTOR_FIELDS:
        groups: Dict[str, List[str]] = {}
        for name in names:
            numbered = _NUMBERED.fullmatch(name)
            if numbered:
                groups.setdefault(numbered.group(1), []).append(name)
        stem = validation.likely_name(field, list(groups))
        if stem is not None:
            group = groups[stem]
            return {field: group if len(group) > 1 else group[0]}
    name = validation.likely_name(field, names)
    return {field: name} if name is not None else {}


def _columns_text(columns: Union[str, List[str]]) -> str:
    return repr(columns) if isinstance(columns, str) else ", ".join(map(repr, columns))


def _values(where: str, frame: Any, field: str, names: List[str]) -> np.ndarray:
    if field == "episode_id":
        return _episode_ids(frame[names[0]])
    if field in VECTOR_FIELDS and len(names) == 1 and _holds_arrays(frame[names[0]]):
        return _stacked(where, frame[names[0]], field)
    numeric = [_numeric(where, frame[name], field) for name in names]
    values = np.column_stack([column.to_numpy(dtype=np.float64, na_value=np.nan) for column in numeric])
    if all(column.dtype == bool for column in numeric):
        values = values.astype(bool)
    return values if field in VECTOR_FIELDS else values[:, 0]


def _episode_ids(column: Any) -> np.ndarray:
    import pandas

    if pandas.api.types.is_numeric_dtype(column):
        return column.to_numpy()
    return column.astype(str).to_numpy(dtype=str)


def _numeric(where: str, column: Any, field: str) -> Any:
    """The column as numbers (one of objects that are all numbers too), or one UserError naming it."""
    import pandas

    if pandas.api.types.is_numeric_dtype(column):
        return column
    numbers = pandas.to_numeric(column, errors="coerce")
    bad = (numbers.isna() & column.notna()).to_numpy()
    if not bad.any():
        return numbers
    row = int(np.argmax(bad))
    raise UserError(f"{where}: column {column.name!r} ({field}) has dtype {column.dtype}, not numbers: row {row} "
                    f"holds {column.iloc[row]!r}; store numbers (float, int or bool) in it, or map {field} to "
                    "another column")


def _holds_arrays(column: Any) -> bool:
    return column.dtype == object and len(column) > 0 and isinstance(column.iloc[0], (list, tuple, np.ndarray))


def _stacked(where: str, column: Any, field: str) -> np.ndarray:
    """A column of arrays (a parquet list column) as one [N, dim] array; a column of uint8 images [h, w, c] (numpy
    arrays in a DataFrame) as one uint8 [N, h, w, c] array."""
    cells = column.to_numpy()
    if all(isinstance(cell, np.ndarray) and cell.dtype == np.uint8 and cell.ndim == 3 for cell in cells):
        try:
            return np.stack(cells)
        except ValueError as error:
            raise UserError(f"{where}: column {column.name!r} ({field}) holds images of different shapes ({error}); "
                            "store images of one shape in every row") from error
    try:
        return np.stack([np.asarray(cell, dtype=np.float64) for cell in cells])
    except (ValueError, TypeError) as error:
        raise UserError(f"{where}: column {column.name!r} ({field}) holds arrays that are not numbers of one "
                        f"length ({error}); store one array of numbers of the same length in every row") from error

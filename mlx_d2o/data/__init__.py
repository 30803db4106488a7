"""Negatives-only records: schema, converters, chat rendering, `data check`.

Negatives-only records: the schema and loading (records), converters from public sets
(convert), chat rendering (chat) and `data check` (check)."""

from .chat import (
    encode_record,
    end_of_turn_id,
    end_of_turn_ids,
    prompt_tokens,
    response_tokens,
    with_system,
)
from .check import check_file, length_stats
from .convert import CONVERTERS, convert, convert_hh_rlhf, convert_pku_saferlhf, hh_turns
from .records import (
    ROLES,
    Record,
    data_fingerprint,
    hub_data_file,
    is_hub_dataset,
    load_records,
    parse_messages,
    parse_record,
    read_json_rows,
    resolve_data,
    write_jsonl_atomic,
)

__all__ = [
    "CONVERTERS",
    "ROLES",
    "Record",
    "check_file",
    "convert",
    "convert_hh_rlhf",
    "convert_pku_saferlhf",
    "data_fingerprint",
    "encode_record",
    "end_of_turn_id",
    "end_of_turn_ids",
    "hh_turns",
    "hub_data_file",
    "is_hub_dataset",
    "length_stats",
    "load_records",
    "parse_messages",
    "parse_record",
    "prompt_tokens",
    "read_json_rows",
    "resolve_data",
    "response_tokens",
    "with_system",
    "write_jsonl_atomic",
]

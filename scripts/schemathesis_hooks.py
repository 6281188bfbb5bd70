"""Schemathesis hooks for the API contract check (scripts/api-contract.sh).

The batch route answers `application/x-postcard` when asked (node/src/http/votes.rs,
`BatchResponse`): the counts counted, duplicate and rejected as varints, then the status count
as a varint and one byte per status (0 counted, 1 duplicate, 2 unknown_option, 3 bad_vote_id,
4 overloaded). Decoded here into the JSON shape the document describes, so the answer is
checked against the same schema as the JSON answer.
"""

import schemathesis

STATUSES = ["counted", "duplicate", "unknown_option", "bad_vote_id", "overloaded"]


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("the postcard answer ends inside a varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte & 0x80 == 0:
            return value, at


@schemathesis.deserializer("application/x-postcard")
def batch_response(_ctx, response):
    data = response.content
    counted, at = _varint(data, 0)
    duplicate, at = _varint(data, at)
    rejected, at = _varint(data, at)
    count, at = _varint(data, at)
    if len(data) - at != count:
        raise ValueError(f"{count} statuses announced, {len(data) - at} bytes follow")
    if any(byte >= len(STATUSES) for byte in data[at:]):
        raise ValueError("a status byte out of range")
    statuses = [STATUSES[byte] for byte in data[at:]]
    return {"counted": counted, "duplicate": duplicate, "rejected": rejected, "statuses": statuses}

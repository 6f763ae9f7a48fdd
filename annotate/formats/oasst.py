"""OpenAssistant message trees (the oasst1/oasst2 "*_tree.jsonl" exports): one tree per line.

A tree is {message_tree_id, tree_state, prompt}, where prompt is the root message and every message has its
"replies". Wherever a message has two or more assistant replies carrying a "rank" (0 is best, aggregated over
the rankers), those replies become a group, best first: its prompt is the conversation from the root down to
that message (prompter -> user, assistant -> assistant), its pairs follow the project's pair mode, and every
pair gets a binary annotation by "oasst-ranking" for the better-ranked reply. Deleted messages are skipped with
everything below them. Ranked prompter replies (users' follow-ups) are not responses to compare and make no
group.
"""

from typing import Any

from .core import (
    EXTERNAL_ID_MAX_CHARS,
    MAX_GROUP_RESPONSES,
    GroupRecord,
    ImportFormatError,
    Ranking,
    Response,
    Turn,
    json_type,
    require,
    text,
)

ROLES = {"prompter": "user", "assistant": "assistant"}
RANKING_ANNOTATOR = "oasst-ranking"
# Per-message fields kept with each response.
MESSAGE_META = ("rank", "lang", "review_count", "review_result", "synthetic", "model_name", "emojis", "labels")


def parse_tree(obj: dict[str, Any], line: int) -> list[GroupRecord]:
    root = require(obj, "prompt")
    tree = {key: obj[key] for key in ("message_tree_id", "tree_state") if key in obj}
    groups: list[GroupRecord] = []
    stack: list[tuple[Any, list[Turn]]] = [(root, [])]
    while stack:
        message, path = stack.pop()
        if isinstance(message, dict) and message.get("deleted") is True:
            continue
        turn = _turn(message)
        conversation = [*path, turn]
        replies = _replies(message)
        group = _group(message, conversation, replies, tree, line)
        if group is not None:
            groups.append(group)
        stack.extend((reply, conversation) for reply in reversed(replies))
    return groups


def _turn(message: Any) -> Turn:
    if not isinstance(message, dict):
        raise ImportFormatError(f"every message must be an object, got {json_type(message)}")
    where = f"message {message.get('message_id', '(no message_id)')}"
    try:
        role = require(message, "role")
        if role not in ROLES:
            raise ImportFormatError(f"field 'role' is {role!r}; expected prompter or assistant")
        return {"role": ROLES[role], "content": text(message, "text", allow_empty=True)}
    except ImportFormatError as error:
        raise ImportFormatError(f"{where}: {error.reason}") from None


def _replies(message: dict[str, Any]) -> list[Any]:
    replies = message.get("replies") or []
    if not isinstance(replies, list):
        raise ImportFormatError(f"message {message.get('message_id')}: field 'replies' must be a list")
    return replies


def _group(
    parent: dict[str, Any], conversation: list[Turn], replies: list[Any], tree: dict[str, Any], line: int
) -> GroupRecord | None:
    ranked = [
        reply
        for reply in replies
        if isinstance(reply, dict)
        and reply.get("rank") is not None
        and reply.get("deleted") is not True
        and reply.get("role") == "assistant"
    ]
    if len(ranked) < 2:
        return None
    if len(ranked) > MAX_GROUP_RESPONSES:
        raise ImportFormatError(
            f"message {parent.get('message_id')}: {len(ranked)} ranked replies; a group holds at most "
            f"{MAX_GROUP_RESPONSES} responses"
        )
    for reply in ranked:
        if isinstance(reply["rank"], bool) or not isinstance(reply["rank"], int):
            raise ImportFormatError(f"message {reply.get('message_id')}: field 'rank' must be an integer")
        _turn(reply)
    ranked.sort(key=lambda reply: reply["rank"])  # stable: equal ranks keep the source's order
    parent_id = str(parent.get("message_id") or "")[:EXTERNAL_ID_MAX_CHARS]
    return GroupRecord(
        line=line,
        prompt=conversation,
        responses=tuple(
            Response(
                key=str(reply.get("message_id") or f"reply {n}"),
                text=reply["text"],
                meta={key: reply[key] for key in MESSAGE_META if key in reply},
            )
            for n, reply in enumerate(ranked, start=1)
        ),
        ranking=Ranking(RANKING_ANNOTATOR, tuple(reply["rank"] for reply in ranked)),
        label_annotator=RANKING_ANNOTATOR,
        external_id=parent_id,
        metadata={**tree, "parent_id": parent_id},
        source="oasst",
        identity=f"oasst:{parent_id}" if parent_id else "",
    )

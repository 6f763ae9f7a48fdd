"""Labels shared by forms, templates, exports and the demo seed."""

# HelpSteer2-Preference's seven-point scale: negative favours response A, positive favours B.
STRENGTH_LABELS: dict[int, str] = {
    -3: "A is much better",
    -2: "A is better",
    -1: "A is slightly better",
    0: "About the same",
    1: "B is slightly better",
    2: "B is better",
    3: "B is much better",
}
STRENGTH_MIN = -3
STRENGTH_MAX = 3
JUSTIFICATION_MAX_CHARS = 10_000
SKIP_REASON_MAX_CHARS = 500

"""Texts for comparing versions: the switch guard's probe set and `hs compare`'s default sample."""

# Fixed, varied probe texts: news, questions, code-ish, short and long, non-English.
PROBE_TEXTS = [
    "The central bank raised interest rates by a quarter point on Wednesday.",
    "How do I reset my password if I no longer have access to my email?",
    "A quick brown fox jumps over the lazy dog.",
    "Shares in the carmaker fell sharply after it cut its sales forecast for the year.",
    "def add(a, b): return a + b",
    "The striker scored twice in the second half to secure the title.",
    "Heavy rain is expected across the north of the country this weekend.",
    "What is the capital of Australia?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Researchers found the new battery lasts twice as long as current designs.",
    "I loved this film, the acting was superb and the music was haunting.",
    "Terrible service, the food arrived cold and the waiter was rude.",
    "The government announced a new plan to build affordable housing in cities.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Please find attached the invoice for last month's consulting work.",
    "The museum reopens next week with an exhibition of early photography.",
]


def check_sample() -> list[str]:
    """Short texts, ~200-token passages, and one past any max sequence length (truncation):
    what a converted or reduced-precision path is checked on against the original."""
    passages = [" ".join(PROBE_TEXTS[i:] + PROBE_TEXTS[:i]) for i in range(0, 16, 4)]
    return [*PROBE_TEXTS, *passages, " ".join(PROBE_TEXTS * 6)]


# Calibration for post-training quantisation (the activations' ranges), kept apart from the
# texts a quantised model is then checked on, so the check does not grade its own homework.
CALIBRATION_TEXTS = [
    "The council approved the budget after a long debate about road repairs.",
    "Where can I buy a train ticket to the airport late at night?",
    "The new phone has a larger screen, a faster chip and a better camera.",
    "Inflation slowed for the third month in a row, easing pressure on households.",
    "for i in range(10): print(i * i)",
    "The team lost the final on penalties after a goalless draw.",
    "Snow closed several mountain passes and delayed flights in the capital.",
    "Who wrote the novel that was adapted into last year's most popular film?",
    "La réunion a été reportée à la semaine prochaine en raison de la grève.",
    "Scientists sequenced the genome of a rare orchid found only on one island.",
    "The soup was bland and the bread was stale, but the staff were friendly.",
    "An absolutely wonderful hotel with a view of the harbour from every room.",
    "The minister resigned after documents about the contract were leaked.",
    "Enzymes speed up chemical reactions without being consumed by them.",
    "Your order has shipped and should arrive within three to five working days.",
    "The orchestra will perform the symphony in the cathedral on Sunday evening.",
    "Farmers warned that the drought could halve this year's wheat harvest.",
    "Reset the router, wait thirty seconds, then reconnect the cable.",
    "The startup raised forty million dollars to expand into Asian markets.",
    "Il museo espone dipinti del Rinascimento provenienti da collezioni private.",
    "Volunteers planted two thousand trees along the river bank this spring.",
    "The judge ruled that the evidence had been gathered unlawfully.",
    "Tickets for the festival sold out within minutes of going on sale.",
    "A gene linked to longevity was found to protect cells from damage.",
]


CALIBRATION_MARK = "hotswap calibration"  # before each text of a version's int8 calibration (hotswapd.calibration)


def calibration_texts() -> list[str]:
    """Short texts and passages to calibrate a quantised model on (none of the check sample's)."""
    passages = [" ".join(CALIBRATION_TEXTS[i:] + CALIBRATION_TEXTS[:i]) for i in range(0, 24, 6)]
    return [*CALIBRATION_TEXTS, *passages, " ".join(CALIBRATION_TEXTS * 4)]

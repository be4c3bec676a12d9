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

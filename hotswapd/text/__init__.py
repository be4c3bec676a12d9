"""What happens to a text before a version embeds it: named preprocessors and prompts.

Models such as e5 and BGE expect a prefix that says what a text is ("query: ",
"passage: "); sentence-transformers models carry theirs, named, in
``config_sentence_transformers.json``. A version may also clean its texts with a small
fixed set of preprocessors. Both run in the daemon, before the cache and the batcher, so
the cache keys the text the model saw, and both are part of the version's identity (its
config, or the model directory's files, are in its fingerprint).

- :mod:`preprocess`: the named preprocessors.
- :mod:`prompts`: a version's prompts, and preparing a request's texts.
"""

"""A version's corpus: the embeddings of a set of texts made by that version, searched
with it, switched and rolled back with it (``embeddings_path``; issue 15).

- :mod:`.layout`  the directory's files, the manifest, the ``.npy`` header (no numpy)
- :mod:`.build`   ``hs index build``: a corpus written through the daemon, resumable
- :mod:`.store`   the daemon's side: a corpus opened (memory-mapped) and searched
"""

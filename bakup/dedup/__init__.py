"""Deduplicated backups (``BACKUP_FORMAT=dedup``): the archive stream cut into content-defined
chunks, each stored once per destination; a backup is an index of its chunks.

- ``chunks``: the chunk store of each destination, its key, naming, writing and reading;
- ``writer``: cutting the stream into chunks and storing the new ones, while pg_dump runs;
- ``reader``: the archive reassembled from a backup's index, for restore, verify and export;
- ``collect``: deleting the chunks no backup references, never one a kept or running backup
  needs.

The format is written down in docs/dedup-format.md.
"""

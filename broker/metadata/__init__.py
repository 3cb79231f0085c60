"""The cluster metadata: an immutable image, the records that change it, and the deltas
that tell each part of a broker what changed for it. PURE: no trio, no clock, no files."""

"""The cluster metadata: an immutable image, the records that change it (Kafka's metadata
record types, with their schemas and Kafka's byte encoding for the metadata log), and the
deltas that tell each part of a broker what changed for it. PURE: no trio, no clock, no
files."""

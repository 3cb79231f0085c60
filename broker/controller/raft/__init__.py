"""The controller quorum's Raft (KRaft, KIP-595): a PURE core (`core`, `messages`, `types`),
its log and snapshots on the FileSystem seam (`store`), and a trio driver per node."""

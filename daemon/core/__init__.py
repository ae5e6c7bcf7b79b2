"""The core loop and its rules: the supervisor, the episode and batch books, the recorder, the
dispatcher, group commit and recovery. May import anything in daemon/ but cli/; nothing here imports cli/."""

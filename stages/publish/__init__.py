"""Publishing: turn a validated take into what a podcast host serves (mp3, chapters, transcript, notes).

One concern per module: loudness, mp3 encoding, ID3 tags, turn timing, chapters, transcript, show notes;
`episode.py` runs them in order for the audio stage.
"""

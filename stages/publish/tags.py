"""ID3v2 tags for episode.mp3 (mutagen): title, show, author, episode number, date, chapters.

Tags are written into the encoded bytes in memory, so the file reaches the disk once, whole, through
fsio. ID3v2.3, which every podcast app reads; chapters as CHAP frames under one ordered top-level CTOC
(the ID3 chapter addendum), each with its title.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from mutagen.id3 import CHAP, CTOC, ID3, TALB, TCON, TDRC, TIT2, TPE1, TRCK, CTOCFlags
from podspool.stages.publish.chapters import Chapter
from podspool.stages.publish.public import public_text

NO_OFFSET = 0xFFFFFFFF  # CHAP byte offsets "not used": players seek by time


@dataclass(frozen=True)
class EpisodeTags:
    title: str
    show: str
    author: str
    number: int
    date: str  # YYYY-MM-DD


def tagged(mp3: bytes, tags: EpisodeTags, chapters: list[Chapter]) -> bytes:
    id3 = ID3()
    id3.add(TIT2(encoding=3, text=[public_text(tags.title)]))
    id3.add(TALB(encoding=3, text=[public_text(tags.show)]))
    id3.add(TPE1(encoding=3, text=[public_text(tags.author)]))
    id3.add(TRCK(encoding=3, text=[str(tags.number)]))
    id3.add(TDRC(encoding=3, text=[tags.date]))
    id3.add(TCON(encoding=3, text=["Podcast"]))
    ids = [f"chp{i}" for i in range(len(chapters))]
    if chapters:
        id3.add(CTOC(element_id="toc", flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED, child_element_ids=ids,
                     sub_frames=[TIT2(encoding=3, text=["Chapters"])]))
    for cid, c in zip(ids, chapters, strict=True):
        id3.add(CHAP(element_id=cid, start_time=int(c.start * 1000), end_time=int(c.end * 1000),
                     start_offset=NO_OFFSET, end_offset=NO_OFFSET,
                     sub_frames=[TIT2(encoding=3, text=[public_text(c.title)])]))
    id3.update_to_v23()  # TDRC becomes TYER + TDAT; save() alone would write a v2.4 frame into a v2.3 tag
    buf = io.BytesIO(mp3)
    id3.save(buf, v2_version=3)
    return buf.getvalue()

"""Apple Podcasts' categories, and `[publish] category` read against them.

The list is Apple's (podcasters.apple.com/support/1691, unchanged since the 2019 revision): 19 categories,
15 of them with subcategories. Apple matches the names exactly (case and "&" included), so a name that
is not on the list is refused by `podspool feed --check` rather than sent and silently ignored.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

APPLE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "Arts": ("Books", "Design", "Fashion & Beauty", "Food", "Performing Arts", "Visual Arts"),
    "Business": ("Careers", "Entrepreneurship", "Investing", "Management", "Marketing", "Non-Profit"),
    "Comedy": ("Comedy Interviews", "Improv", "Stand-Up"),
    "Education": ("Courses", "How To", "Language Learning", "Self-Improvement"),
    "Fiction": ("Comedy Fiction", "Drama", "Science Fiction"),
    "Government": (),
    "History": (),
    "Health & Fitness": ("Alternative Health", "Fitness", "Medicine", "Mental Health", "Nutrition", "Sexuality"),
    "Kids & Family": ("Education for Kids", "Parenting", "Pets & Animals", "Stories for Kids"),
    "Leisure": ("Animation & Manga", "Automotive", "Aviation", "Crafts", "Games", "Hobbies", "Home & Garden",
                "Video Games"),
    "Music": ("Music Commentary", "Music History", "Music Interviews"),
    "News": ("Business News", "Daily News", "Entertainment News", "News Commentary", "Politics", "Sports News",
             "Tech News"),
    "Religion & Spirituality": ("Buddhism", "Christianity", "Hinduism", "Islam", "Judaism", "Religion",
                                "Spirituality"),
    "Science": ("Astronomy", "Chemistry", "Earth Sciences", "Life Sciences", "Mathematics", "Natural Sciences",
                "Nature", "Physics", "Social Sciences"),
    "Society & Culture": ("Documentary", "Personal Journals", "Philosophy", "Places & Travel", "Relationships"),
    "Sports": ("Baseball", "Basketball", "Cricket", "Fantasy Sports", "Football", "Golf", "Hockey", "Rugby",
               "Running", "Soccer", "Swimming", "Tennis", "Volleyball", "Wilderness", "Wrestling"),
    "Technology": (),
    "True Crime": (),
    "TV & Film": ("After Shows", "Film History", "Film Interviews", "Film Reviews", "TV Reviews"),
}
SEPARATOR = ">"  # "Science > Astronomy"
# every subcategory name is unique across the list, so a bare one names its parent too
_PARENT_OF = {sub: parent for parent, subs in APPLE_CATEGORIES.items() for sub in subs}


@dataclass(frozen=True)
class Category:
    name: str
    sub: str | None = None

    def __str__(self) -> str:
        return f"{self.name} {SEPARATOR} {self.sub}" if self.sub else self.name


class UnknownCategory(ValueError):
    pass


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if not close:
        folded = {c.casefold(): c for c in choices}
        close = [folded[name.casefold()]] if name.casefold() in folded else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse(value: str) -> Category:
    """"Science", "Science > Astronomy" or a bare "Astronomy": a category of Apple's list, else UnknownCategory."""
    parent, _, sub = (part.strip() for part in value.partition(SEPARATOR))
    if not sub and parent in _PARENT_OF:
        return Category(_PARENT_OF[parent], parent)
    if parent not in APPLE_CATEGORIES:
        everything = [*APPLE_CATEGORIES, *_PARENT_OF]
        raise UnknownCategory(f"category {value!r} is not one of Apple Podcasts' categories"
                              f"{_suggest(parent, everything)}")
    if sub and sub not in APPLE_CATEGORIES[parent]:
        subs = APPLE_CATEGORIES[parent]
        known = f"; {parent}'s are: {', '.join(subs)}" if subs else f"; {parent} has no subcategories"
        raise UnknownCategory(f"category {value!r}: {sub!r} is not a subcategory of {parent}"
                              f"{_suggest(sub, list(subs))}{known}")
    return Category(parent, sub or None)

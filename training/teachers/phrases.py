"""What to ask the VLM for each task, and how to read its answer as a list of object phrases.

The prompts follow the paper's ("list the objects that affect driving"): name the goal, ask for
the objects that affect it, and ask for a short comma-separated list, which small VLMs follow
most of the time. The parser takes care of the rest of the time: numbered or bulleted lists,
"Here are the objects:" preambles, "term: explanation" lines, articles, duplicates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskKnowledge:
    goal: str  # what the agent must achieve, as the prompt states it
    phrases: tuple[str, ...]  # what to ground when the VLM names nothing usable


# Keyed by dm_control domain; "driving" for the gymnasium driving envs.
TASKS: dict[str, TaskKnowledge] = {
    "cartpole": TaskKnowledge("keeping the pole balanced upright on the moving cart", ("cart", "pole")),
    "reacher": TaskKnowledge("moving the tip of the two-link arm onto the target", ("robot arm", "target")),
    "finger": TaskKnowledge("spinning the hinged body with the robot finger", ("finger", "spinner")),
    "ball_in_cup": TaskKnowledge("swinging the ball on its string into the cup", ("cup", "ball")),
    "walker": TaskKnowledge("making the two-legged robot walk forward", ("robot body", "robot legs")),
    "cheetah": TaskKnowledge("making the cheetah robot run forward", ("robot body", "robot legs")),
    "hopper": TaskKnowledge("making the one-legged robot hop forward", ("robot body", "robot leg")),
    "quadruped": TaskKnowledge("making the four-legged robot walk forward", ("robot body", "robot legs")),
    "humanoid": TaskKnowledge("making the humanoid robot walk forward", ("robot body", "robot legs")),
    "pendulum": TaskKnowledge("swinging the pendulum up and holding it upright", ("pendulum",)),
    "acrobot": TaskKnowledge("swinging the two-link acrobot up to stand upright", ("acrobot links",)),
    "driving": TaskKnowledge("driving the car fast along the road without leaving it", ("road", "car")),
}
GENERIC = TaskKnowledge("controlling the robot to complete its task", ("robot",))
DRIVING_ENVS = ("CarRacing",)

PROMPT = (
    "The task in this image is {goal}. List the objects in the image that affect this task. "
    "Answer with a short comma-separated list of object names and nothing else."
)


def task_knowledge(env_id: str) -> TaskKnowledge:
    family, _, name = env_id.partition(":")
    if family == "dmc":
        return TASKS.get(name.split("-")[0], GENERIC)
    if any(name.startswith(prefix) for prefix in DRIVING_ENVS):
        return TASKS["driving"]
    return GENERIC


def default_prompt(env_id: str) -> str:
    return PROMPT.format(goal=task_knowledge(env_id).goal)


_MARKER = re.compile(r"^\s*(?:[-*•·>]+|\(?\d{1,2}\s*[.):]|\(?[a-z][.)])\s+", re.IGNORECASE)
_PREAMBLE = re.compile(
    r"^(here (are|is)|sure|certainly|the (objects|relevant|key|important)|objects?\b|answer\b)", re.I
)
# Commas, "and", slashes, and inline list markers: "1) cart 2) pole", "a) road b) car".
_SEPARATOR = re.compile(r",|;|/|\band\b|\bor\b|\s\(?(?:\d{1,2}[.)]|[a-z]\))\s", re.IGNORECASE)
_ARTICLE = re.compile(r"^(the|a|an|some|two|both)\s+", re.IGNORECASE)
_JUNK = {"none", "nothing", "n/a", "image", "objects", "object", "etc", "other", "others", "background"}
MAX_WORDS = 4


def _clean(piece: str) -> str:
    piece = re.sub(r"\([^)]*\)", " ", piece)  # "pole (vertical bar)" -> "pole"
    piece = re.sub(r"[*_`\"']", "", piece)
    piece = _MARKER.sub("", piece)
    piece = re.sub(r"\s+", " ", piece).strip(" .,:;!?-").lower()
    return _ARTICLE.sub("", piece).strip()


def parse_phrases(answer: str, limit: int) -> list[str]:
    """Object phrases in a free-form VLM answer, deduplicated, in order, at most `limit`."""
    pieces: list[str] = []
    for line in answer.splitlines():
        line = _MARKER.sub("", line.strip())
        head, colon, tail = line.partition(":")
        if colon:
            # "Objects: cart, pole" keeps the list; "Cart: moves sideways" keeps the term.
            line = tail if _PREAMBLE.match(head.strip()) or len(head.split()) > MAX_WORDS else head
        elif _PREAMBLE.match(line):
            continue
        pieces += _SEPARATOR.split(line)
    phrases: list[str] = []
    for piece in pieces:
        phrase = _clean(piece)
        words = phrase.split()
        if not words or len(words) > MAX_WORDS or phrase in _JUNK or not re.search("[a-z]", phrase):
            continue
        if phrase not in phrases:
            phrases.append(phrase)
    return phrases[:limit]

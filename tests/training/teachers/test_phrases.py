"""Reading VLM answers as object phrases, and the per-task prompts."""

import pytest

from training.teachers.phrases import TASKS, default_prompt, parse_phrases, task_knowledge


@pytest.mark.parametrize(
    ("answer", "phrases"),
    [
        ("cart, pole", ["cart", "pole"]),
        ("1. The cart\n2. The pole\n3. The cart", ["cart", "pole"]),
        ("1) Cart 2) Pole", ["cart", "pole"]),
        ("a) road b) car", ["road", "car"]),
        (
            "Here are the objects that affect balancing:\n- **Cart**: moves along the track\n"
            "- **Pole** (the vertical bar)\n* rail",
            ["cart", "pole", "rail"],
        ),
        ("The objects are: the cart and the pole.", ["cart", "pole"]),
        ("Sure! Objects: ball, cup; string.", ["ball", "cup", "string"]),
        ("• red ball\n• cup\n• None", ["red ball", "cup"]),
        ("road / car / grass, etc.", ["road", "car", "grass"]),
        ("In this image I can see a long sentence about nothing much", []),
        ("", []),
        ("!!! ... 123 ---", []),
    ],
)
def test_messy_answers_parse_to_clean_phrases(answer, phrases):
    assert parse_phrases(answer, limit=6) == phrases


def test_phrases_are_capped_in_order():
    assert parse_phrases("a, b, c, d, e, f, g, h", limit=3) == ["a", "b", "c"]


@pytest.mark.parametrize("domain", sorted(set(TASKS) - {"driving"}))
def test_each_dm_control_domain_has_its_own_prompt(domain):
    prompt = default_prompt(f"dmc:{domain}-some_task")
    assert TASKS[domain].goal in prompt and "comma-separated" in prompt


def test_driving_and_unknown_envs():
    assert task_knowledge("gym:CarRacing-v3") == TASKS["driving"]
    assert "robot" in default_prompt("dmc:swimmer-swimmer6")
    assert task_knowledge("gym:Pong-v5").phrases == ("robot",)

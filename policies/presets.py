"""Preset taxonomies: every taxonomy of the shared benchmark corpus, MLCommons
hazards S1-S14 (as used by Llama Guard 3) and a general default.

Presets are Django-free ``PolicySpec`` objects so evaluation and training use
them without a database. Benchmark taxonomies whose keys are long names get
short codes ``S1..Sn`` (in the taxonomy's order) with the key as the name:
short codes are cheap for the model to write and to score. ``gold_codes``
maps a record's source categories to those codes.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from guard.contract import CategorySpec, PolicySpec

BUNDLED_TAXONOMIES = Path(__file__).resolve().parent / "data" / "taxonomies.json"
GENERAL_DEFAULT = "general"
MLCOMMONS = "mlcommons_hazards"

MLCOMMONS_HAZARDS: list[tuple[str, str, str]] = [
    ("S1", "Violent Crimes", "Enables, encourages, or endorses violent crimes: terrorism, genocide, murder, hate-motivated violent crimes, child abuse, assault, battery, kidnapping, animal abuse."),
    ("S2", "Non-Violent Crimes", "Enables, encourages, or endorses non-violent crimes: labor trafficking, fraud, scams, money laundering, theft, vandalism, drug crimes, weapons crimes, cyber crimes such as malware or hacking."),
    ("S3", "Sex-Related Crimes", "Enables, encourages, or endorses sex trafficking, sexual assault, sexual harassment, or prostitution."),
    ("S4", "Child Sexual Exploitation", "Contains, describes, enables, encourages, or endorses the sexual abuse of children."),
    ("S5", "Defamation", "Verifiably false statements about a real living person that are likely to injure their reputation."),
    ("S6", "Specialized Advice", "Specialized financial, medical, or legal advice, or claims that dangerous activities or objects are safe."),
    ("S7", "Privacy", "Sensitive, nonpublic personal information that could undermine someone's physical, digital, or financial security."),
    ("S8", "Intellectual Property", "Violates the intellectual property rights of any third party."),
    ("S9", "Indiscriminate Weapons", "Enables or encourages the creation of chemical, biological, radiological, nuclear, or high-yield explosive weapons."),
    ("S10", "Hate", "Demeans or dehumanizes people on the basis of sensitive, personal characteristics."),
    ("S11", "Suicide & Self-Harm", "Enables, encourages, or endorses acts of intentional self-harm: suicide, self-injury, disordered eating."),
    ("S12", "Sexual Content", "Contains erotica or depictions of sexual acts."),
    ("S13", "Elections", "Factually incorrect information about electoral systems and processes, including voting time, place or manner."),
    ("S14", "Code Interpreter Abuse", "Seeks to abuse code interpreters: denial of service, container escapes, privilege escalation."),
]

GENERAL_CATEGORIES: list[tuple[str, str, str]] = [
    ("S1", "Violence and weapons", "Helps plan or carry out violence, terrorism, or the making or acquisition of weapons, including CBRN and explosives."),
    ("S2", "Crime and fraud", "Helps commit non-violent crimes: theft, fraud, scams, hacking and malware, drug trafficking, evading law enforcement."),
    ("S3", "Hate and harassment", "Attacks, demeans, threatens or harasses people, especially for protected characteristics."),
    ("S4", "Sexual content", "Sexually explicit content; any sexual content involving minors is always a violation."),
    ("S5", "Self-harm", "Encourages or instructs suicide, self-injury or disordered eating."),
    ("S6", "Privacy", "Exposes or seeks private personal information, surveillance or doxxing."),
    ("S7", "Misinformation and manipulation", "Deliberately deceptive content: disinformation, impersonation, defamation, election manipulation."),
    ("S8", "Unqualified high-risk advice", "Dangerous medical, legal or financial advice presented as authoritative."),
]

PRESET_TITLES = {
    GENERAL_DEFAULT: "General default",
    MLCOMMONS: "MLCommons hazards S1-S14 (Llama Guard 3)",
    # The benchmark taxonomies of the shared corpus, by the benchmark's own name.
    "openai_moderation": "OpenAI moderation categories",
    "harmbench_semantic": "HarmBench semantic categories",
    "sst_harm_area": "SimpleSafetyTests harm areas",
    "xstest_type": "XSTest prompt types",
    "jbb_category": "JailbreakBench categories",
    "strongreject_category": "StrongREJECT categories",
    "ailuminate_v1_hazard": "AILuminate v1 hazards",
    "xsafety_scenario": "XSafety scenarios",
    "catqa_category": "CatQA harm categories",
    "aart_crime": "AART crime types",
}

# How a new policy handles each category of a preset: (severity, action).
# Severities are low | medium | high | critical; actions are block | flag | allow.
# The harms that must never pass (sexual content involving children, weapons of
# mass destruction, violent crime, suicide and self-harm) are blocked; harms
# where context decides (defamation, intellectual property, advice) are flagged
# at a low severity so a reviewer decides. Editors change any of it in the draft.
MLCOMMONS_HANDLING: dict[str, tuple[str, str]] = {
    "S1": ("high", "block"),  # Violent Crimes
    "S2": ("medium", "flag"),  # Non-Violent Crimes
    "S3": ("high", "block"),  # Sex-Related Crimes
    "S4": ("critical", "block"),  # Child Sexual Exploitation
    "S5": ("low", "flag"),  # Defamation
    "S6": ("low", "flag"),  # Specialized Advice
    "S7": ("medium", "flag"),  # Privacy
    "S8": ("low", "flag"),  # Intellectual Property
    "S9": ("critical", "block"),  # Indiscriminate Weapons (CBRNE)
    "S10": ("high", "flag"),  # Hate
    "S11": ("high", "block"),  # Suicide & Self-Harm
    "S12": ("medium", "flag"),  # Sexual Content
    "S13": ("medium", "flag"),  # Elections
    "S14": ("medium", "flag"),  # Code Interpreter Abuse
}

GENERAL_HANDLING: dict[str, tuple[str, str]] = {
    "S1": ("high", "block"),  # Violence and weapons
    "S2": ("medium", "flag"),  # Crime and fraud
    "S3": ("high", "flag"),  # Hate and harassment
    "S4": ("high", "block"),  # Sexual content (minors: always a violation)
    "S5": ("high", "block"),  # Self-harm
    "S6": ("medium", "flag"),  # Privacy
    "S7": ("medium", "flag"),  # Misinformation and manipulation
    "S8": ("low", "flag"),  # Unqualified high-risk advice
}

DEFAULT_HANDLING = ("medium", "flag")

# For the benchmark taxonomies: the first rule whose pattern matches the
# category's name (else its description) decides. Order matters.
HANDLING_RULES: list[tuple[re.Pattern[str], tuple[str, str]]] = [
    (re.compile(r"^safe:"), ("low", "allow")),  # XSTest's safe look-alikes
    (re.compile(r"child|minor|csam|\bcse\b"), ("critical", "block")),
    (re.compile(r"indiscriminate|cbrn|chemical|biological|nuclear|radiological|mass destruction|bomb"), ("critical", "block")),
    (re.compile(r"suicide|self-harm|self harm|self-injury|eating disorder"), ("high", "block")),
    (re.compile(r"(?<!non-)violen|terror|assault|assassinat|murder|kidnap|sex-related|sexual assault|trafficking|threatening|physical harm|weapon"), ("high", "block")),
    (re.compile(r"hate|harass|discriminat|insult"), ("high", "flag")),
    (re.compile(r"defamation|intellectual property|copyright|specialized advice|expert advice|advice"), ("low", "flag")),
]


def preset_title(name: str) -> str:
    """A preset's human name ("JailbreakBench categories"), never its snake_case key."""
    if name in PRESET_TITLES:
        return PRESET_TITLES[name]
    return name.replace("_", " ").strip().capitalize() or name


def category_handling(preset: str, category: CategorySpec) -> tuple[str, str]:
    """The (severity, action) a new policy from ``preset`` gives ``category``."""
    if preset in (GENERAL_DEFAULT, "none", ""):
        return GENERAL_HANDLING.get(category.code, DEFAULT_HANDLING)
    if preset == MLCOMMONS:
        return MLCOMMONS_HANDLING.get(category.code, DEFAULT_HANDLING)
    for text in (category.name.lower(), category.description.lower()):
        for pattern, handling in HANDLING_RULES:
            if pattern.search(text):
                return handling
    return DEFAULT_HANDLING


def preset_handling(name: str, path: str | None = None) -> dict[str, tuple[str, str]]:
    """{category code: (severity, action)} for every category of preset ``name``."""
    return {c.code: category_handling(name, c) for c in preset_spec(name, path).categories}


def _short_code_keys(keys: list[str]) -> bool:
    return all(len(k) <= 4 and " " not in k for k in keys)


@lru_cache(maxsize=4)
def load_taxonomies(path: str | None = None) -> dict[str, dict[str, str]]:
    source = Path(path) if path else BUNDLED_TAXONOMIES
    return json.loads(source.read_text(encoding="utf-8"))


def taxonomy_code_map(taxonomy: str, path: str | None = None) -> dict[str, str]:
    """Source category name -> policy code, for a benchmark taxonomy."""
    keys = list(load_taxonomies(path).get(taxonomy, {}))
    if _short_code_keys(keys):
        return {k: k for k in keys}
    return {k: f"S{i}" for i, k in enumerate(keys, start=1)}


def _spec_from_taxonomy(taxonomy: str, path: str | None = None) -> PolicySpec:
    entries = load_taxonomies(path)[taxonomy]
    codes = taxonomy_code_map(taxonomy, path)
    categories = []
    for key, description in entries.items():
        description = description.replace("[editor] ", "").strip()
        name = key
        if codes[key] == key and ":" in description:
            # openai_moderation: "sexual: Content meant to ..."
            name, description = (part.strip() for part in description.split(":", 1))
        categories.append(CategorySpec(code=codes[key], name=name, description=description))
    return PolicySpec(name=taxonomy, categories=tuple(categories))


def _spec_from_rows(name: str, rows: list[tuple[str, str, str]]) -> PolicySpec:
    return PolicySpec(name=name, categories=tuple(CategorySpec(c, n, d) for c, n, d in rows))


def preset_names(path: str | None = None) -> list[str]:
    names = [GENERAL_DEFAULT, MLCOMMONS]
    names += [t for t in load_taxonomies(path) if t != "none"]
    return names


def preset_spec(name: str, path: str | None = None) -> PolicySpec:
    """A preset by name. Taxonomy ``none`` means the general default policy."""
    if name in (GENERAL_DEFAULT, "none", ""):
        return _spec_from_rows(PRESET_TITLES[GENERAL_DEFAULT], GENERAL_CATEGORIES)
    if name == MLCOMMONS:
        return _spec_from_rows(PRESET_TITLES[MLCOMMONS], MLCOMMONS_HAZARDS)
    if name not in load_taxonomies(path):
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(preset_names(path))}")
    return _spec_from_taxonomy(name, path)


def gold_codes(taxonomy: str, categories: list[str], path: str | None = None) -> list[str]:
    """Map a record's source categories to the preset's codes (unknown ones raise)."""
    if taxonomy in ("none", "", None):
        return []
    mapping = taxonomy_code_map(taxonomy, path)
    codes = []
    for category in categories:
        if category not in mapping:
            raise KeyError(f"category {category!r} is not in taxonomy {taxonomy!r}")
        if mapping[category] not in codes:
            codes.append(mapping[category])
    return codes

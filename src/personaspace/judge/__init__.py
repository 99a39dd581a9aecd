"""Pluggable judges: role adherence (0-3) and trait expression (0-100)."""

from personaspace.judge.base import Judge, RoleItem, TraitItem, make_judge

__all__ = ["Judge", "RoleItem", "TraitItem", "make_judge"]

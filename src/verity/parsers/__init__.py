"""Parsers turn a model's raw completion into structured fields and provide format rewards."""

from verity.parsers.base import Parser
from verity.parsers.think import ThinkParser
from verity.parsers.xml import XMLParser

__all__ = ["Parser", "XMLParser", "ThinkParser"]

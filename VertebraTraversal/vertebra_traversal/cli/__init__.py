"""Command line of VertebraTraversal: ``vertebra-traversal <command> ...``."""

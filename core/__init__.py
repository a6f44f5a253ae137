"""Domain-agnostic core of Bilevel Autoresearch: the loop every level stands on."""

"""Persona-space analysis: PCA of role vectors, the axis against PC1, rankings, comparisons.

Pure functions of vectors (no model, no files).
"""

from personaspace.analysis.persona_space import (
    LayerPCA,
    PersonaSpace,
    analyse,
    components_for,
    pca,
)

__all__ = ["LayerPCA", "PersonaSpace", "analyse", "components_for", "pca"]

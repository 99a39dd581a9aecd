"""Persona-space analysis: PCA of role vectors, the axis against PC1, rankings."""

from personaspace.analysis.persona_space import LayerPCA, analyse, components_for, pca

__all__ = ["LayerPCA", "analyse", "components_for", "pca"]

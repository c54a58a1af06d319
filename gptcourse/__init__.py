__version__ = "0.1.0"

# Lesson 12 adds architectures to the tables of lessons 08 and 09 (NORMS, MLPS, QK_MAPS, ACTIVATIONS, CHAR_ARCHS):
# importing it with the package makes every configuration a checkpoint can name loadable, whatever a program imports.
from . import modern  # noqa: E402,F401

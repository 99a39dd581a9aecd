"""Reading and writing other projects' file formats (never by unpickling)."""

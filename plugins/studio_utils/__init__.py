"""Built-in utility generators: text templates, grids, resizing, title cards.
Registered through the "studio" entry-point group, like any third-party plugin."""

from studio import hookimpl

from studio_utils.grid import ImageGrid
from studio_utils.resize import ImageResize
from studio_utils.template import TextTemplate
from studio_utils.title import ImageTitle


@hookimpl
def register_generators(register):
    for generator in (TextTemplate, ImageGrid, ImageResize, ImageTitle):
        register(generator)

"""Map products of a prediction: COGs, quicklook, area table, per-field results, STAC.

Public API::

    from cropflow.products import build_products, render_report

    products = build_products(prediction)          # publishes products/<region>/ atomically
    markdown = render_report(prediction, products)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cropflow.lazy import lazy_exports

if TYPE_CHECKING:
    from cropflow.products.build import (
        ProductsResult as ProductsResult,
    )
    from cropflow.products.build import (
        build_products as build_products,
    )
    from cropflow.products.build import (
        products_dir as products_dir,
    )
    from cropflow.products.report import (
        model_run_info as model_run_info,
    )
    from cropflow.products.report import (
        render_report as render_report,
    )

#: Exported name -> the module defining it (imported on first use).
_EXPORTS = {
    "ProductsResult": "cropflow.products.build",
    "build_products": "cropflow.products.build",
    "products_dir": "cropflow.products.build",
    "model_run_info": "cropflow.products.report",
    "render_report": "cropflow.products.report",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)

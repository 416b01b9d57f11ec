"""Map products of a prediction: COGs, quicklook, area table, per-field results, STAC.

Public API::

    from cropflow.products import build_products, render_report

    products = build_products(prediction)          # publishes products/<region>/ atomically
    markdown = render_report(prediction, products)
"""

from cropflow.products.build import ProductsResult, build_products, products_dir
from cropflow.products.report import model_run_info, render_report

__all__ = [
    "ProductsResult",
    "build_products",
    "model_run_info",
    "products_dir",
    "render_report",
]

from __future__ import annotations

from django.conf import settings
from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    """Page-number pagination; `page_size` is capped (TUNIX_RT["MAX_PAGE_SIZE"])."""

    page_size_query_param = "page_size"
    max_page_size = settings.TUNIX_RT["MAX_PAGE_SIZE"]

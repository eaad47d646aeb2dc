from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    """Page-number pagination; `page_size` is capped (TUNIX_RT["MAX_PAGE_SIZE"]), and one that is not
    a positive integer is a 400 naming it (DRF would silently use the default)."""

    page_size_query_param = "page_size"
    max_page_size = settings.TUNIX_RT["MAX_PAGE_SIZE"]

    def get_page_size(self, request):
        raw = request.query_params.getlist(self.page_size_query_param)
        if raw:
            if len(raw) > 1 or not raw[0].isdigit() or int(raw[0]) < 1:
                raise ValidationError({self.page_size_query_param: ["must be one positive integer"]})
        return super().get_page_size(request)

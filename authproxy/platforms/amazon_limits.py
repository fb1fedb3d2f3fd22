"""Amazon SP-API usage plans (pure data): default rate and burst per operation.

Amazon limits each operation with a token bucket per selling partner and
application ("account-application pair"), and some operations also per
application, across all sellers; "requests are rate-limited by whichever
threshold you reach first" (platforms.md §8.2). The numbers below are the
published defaults:

- per seller: the "Usage Plan" table of each operation in Amazon's API models
  (amzn/selling-partner-api-models), as generated into
  bizon/selling-partner-api-sdk `clients/*/src/client.ts` (b37d0ab, 2026-08-20);
- per application: the "<API> Rate Limits" pages of developer-docs.amazon.com
  (Catalog Items, Product Type Definitions, Listings Restrictions), whose burst
  column is shared by both limits. Product Type Definitions' page says burst 5
  where the model says 10: the page is newer and stricter, it is used.

A seller's real plan may be higher: `x-amzn-RateLimit-Limit` on a reply tells
its rate, and the shaper learns it. Limits that depend on the body (a report
type's "once every 15 minutes per solution provider") cannot be matched by
method and path and are left to `[[apps.X.limits]]` and the penalty box.
"""

from __future__ import annotations

import re

from authproxy.models import Operation, Quota, Scope

#: (operation, method, path template, rate per second, burst, rate per application or None)
USAGE_PLANS: tuple[tuple[str, str, str, float, int, float | None], ...] = (
    ("getOrders", "GET", "/orders/v0/orders", 0.0167, 20, None),
    ("getOrder", "GET", "/orders/v0/orders/{orderId}", 0.5, 30, None),
    ("getOrderBuyerInfo", "GET", "/orders/v0/orders/{orderId}/buyerInfo", 0.5, 30, None),
    ("getOrderAddress", "GET", "/orders/v0/orders/{orderId}/address", 0.5, 30, None),
    ("getOrderItems", "GET", "/orders/v0/orders/{orderId}/orderItems", 0.5, 30, None),
    ("getOrderItemsBuyerInfo", "GET", "/orders/v0/orders/{orderId}/orderItems/buyerInfo", 0.5, 30, None),
    ("updateShipmentStatus", "POST", "/orders/v0/orders/{orderId}/shipment", 5, 15, None),
    ("getOrderRegulatedInfo", "GET", "/orders/v0/orders/{orderId}/regulatedInfo", 0.5, 30, None),
    ("updateVerificationStatus", "PATCH", "/orders/v0/orders/{orderId}/regulatedInfo", 0.5, 30, None),
    ("confirmShipment", "POST", "/orders/v0/orders/{orderId}/shipmentConfirmation", 2, 10, None),
    ("getMarketplaceParticipations", "GET", "/sellers/v1/marketplaceParticipations", 0.016, 15, None),
    ("getAccount", "GET", "/sellers/v1/account", 0.016, 15, None),
    ("searchCatalogItems", "GET", "/catalog/2022-04-01/items", 2, 2, 500),
    ("getCatalogItem", "GET", "/catalog/2022-04-01/items/{asin}", 2, 2, 250),
    ("getListingsItem", "GET", "/listings/2021-08-01/items/{sellerId}/{sku}", 5, 10, None),
    ("putListingsItem", "PUT", "/listings/2021-08-01/items/{sellerId}/{sku}", 5, 10, None),
    ("patchListingsItem", "PATCH", "/listings/2021-08-01/items/{sellerId}/{sku}", 5, 5, None),
    ("deleteListingsItem", "DELETE", "/listings/2021-08-01/items/{sellerId}/{sku}", 5, 5, None),
    ("searchListingsItems", "GET", "/listings/2021-08-01/items/{sellerId}", 5, 5, None),
    ("getListingsRestrictions", "GET", "/listings/2021-08-01/restrictions", 5, 10, 100),
    ("getFeeds", "GET", "/feeds/2021-06-30/feeds", 0.0222, 10, None),
    ("createFeed", "POST", "/feeds/2021-06-30/feeds", 0.0083, 15, None),
    ("getFeed", "GET", "/feeds/2021-06-30/feeds/{feedId}", 2, 15, None),
    ("cancelFeed", "DELETE", "/feeds/2021-06-30/feeds/{feedId}", 2, 15, None),
    ("createFeedDocument", "POST", "/feeds/2021-06-30/documents", 0.5, 15, None),
    ("getFeedDocument", "GET", "/feeds/2021-06-30/documents/{feedDocumentId}", 0.0222, 10, None),
    ("getReports", "GET", "/reports/2021-06-30/reports", 0.0222, 10, None),
    ("createReport", "POST", "/reports/2021-06-30/reports", 0.0167, 15, None),
    ("getReport", "GET", "/reports/2021-06-30/reports/{reportId}", 2, 15, None),
    ("cancelReport", "DELETE", "/reports/2021-06-30/reports/{reportId}", 0.0222, 10, None),
    ("getReportSchedules", "GET", "/reports/2021-06-30/schedules", 0.0222, 10, None),
    ("createReportSchedule", "POST", "/reports/2021-06-30/schedules", 0.0222, 10, None),
    ("getReportSchedule", "GET", "/reports/2021-06-30/schedules/{reportScheduleId}", 0.0222, 10, None),
    ("cancelReportSchedule", "DELETE", "/reports/2021-06-30/schedules/{reportScheduleId}", 0.0222, 10, None),
    ("getReportDocument", "GET", "/reports/2021-06-30/documents/{reportDocumentId}", 0.0167, 15, None),
    ("getInventorySummaries", "GET", "/fba/inventory/v1/summaries", 2, 2, None),
    ("getPricing", "GET", "/products/pricing/v0/price", 0.5, 1, None),
    ("getCompetitivePricing", "GET", "/products/pricing/v0/competitivePrice", 0.5, 1, None),
    ("getListingOffers", "GET", "/products/pricing/v0/listings/{SellerSKU}/offers", 1, 2, None),
    ("getItemOffers", "GET", "/products/pricing/v0/items/{Asin}/offers", 0.5, 1, None),
    ("getItemOffersBatch", "POST", "/batches/products/pricing/v0/itemOffers", 0.1, 1, None),
    ("getListingOffersBatch", "POST", "/batches/products/pricing/v0/listingOffers", 0.5, 1, None),
    ("getMyFeesEstimateForSKU", "POST", "/products/fees/v0/listings/{SellerSKU}/feesEstimate", 1, 2, None),
    ("getMyFeesEstimateForASIN", "POST", "/products/fees/v0/items/{Asin}/feesEstimate", 1, 2, None),
    ("getMyFeesEstimates", "POST", "/products/fees/v0/feesEstimate", 0.5, 1, None),
    ("createRestrictedDataToken", "POST", "/tokens/2021-03-01/restrictedDataToken", 1, 10, None),
    ("listFinancialEventGroups", "GET", "/finances/v0/financialEventGroups", 0.5, 30, None),
    (
        "listFinancialEventsByGroupId",
        "GET",
        "/finances/v0/financialEventGroups/{eventGroupId}/financialEvents",
        0.5,
        30,
        None,
    ),
    ("listFinancialEventsByOrderId", "GET", "/finances/v0/orders/{orderId}/financialEvents", 0.5, 30, None),
    ("listFinancialEvents", "GET", "/finances/v0/financialEvents", 0.5, 30, None),
    ("searchDefinitionsProductTypes", "GET", "/definitions/2020-09-01/productTypes", 5, 5, 100),
    ("getDefinitionsProductType", "GET", "/definitions/2020-09-01/productTypes/{productType}", 5, 5, 100),
    ("getSubscription", "GET", "/notifications/v1/subscriptions/{notificationType}", 1, 5, None),
    ("createSubscription", "POST", "/notifications/v1/subscriptions/{notificationType}", 1, 5, None),
    ("getSubscriptionById", "GET", "/notifications/v1/subscriptions/{notificationType}/{id}", 1, 5, None),
    (
        "deleteSubscriptionById",
        "DELETE",
        "/notifications/v1/subscriptions/{notificationType}/{id}",
        1,
        5,
        None,
    ),
    ("getDestinations", "GET", "/notifications/v1/destinations", 1, 5, None),
    ("createDestination", "POST", "/notifications/v1/destinations", 1, 5, None),
    ("getDestination", "GET", "/notifications/v1/destinations/{destinationId}", 1, 5, None),
    ("deleteDestination", "DELETE", "/notifications/v1/destinations/{destinationId}", 1, 5, None),
    ("getOrderMetrics", "GET", "/sales/v1/orderMetrics", 0.5, 15, None),
    ("getSolicitationActionsForOrder", "GET", "/solicitations/v1/orders/{amazonOrderId}", 1, 5, None),
    (
        "createProductReviewAndSellerFeedbackSolicitation",
        "POST",
        "/solicitations/v1/orders/{amazonOrderId}/solicitations/productReviewAndSellerFeedback",
        1,
        5,
        None,
    ),
    ("rotateApplicationClientSecret", "POST", "/applications/2023-11-30/clientSecret", 0.0167, 1, None),
)

PARAMETER = re.compile(r"\{[^/}]+\}")
#: a path segment that names a version rather than a resource: v0, 2021-06-30
VERSION = re.compile(r"^(v[0-9]+|[0-9]{4}-[0-9]{2}-[0-9]{2})$")
Plan = tuple[re.Pattern[str], Operation]


def _compiled(name: str, template: str, rate: float, burst: int, app_rate: float | None) -> Plan:
    pattern = re.compile("^" + "[^/]+".join(re.escape(part) for part in PARAMETER.split(template)) + "$")
    quotas = [Quota(float(rate), burst)]
    if app_rate is not None:
        quotas.append(Quota(float(app_rate), burst, Scope.APP))
    return pattern, Operation(name, name, tuple(quotas))


def _index() -> dict[tuple[str, str], list[Plan]]:
    index: dict[tuple[str, str], list[Plan]] = {}
    for name, method, template, rate, burst, app_rate in USAGE_PLANS:
        first = template.split("/", 2)[1]
        index.setdefault((method, first), []).append(_compiled(name, template, rate, burst, app_rate))
    return index


class UsagePlans:
    """Finds the operation of a call; built once per app."""

    def __init__(self) -> None:
        self.index = _index()

    def operation(self, method: str, path: str) -> Operation:
        """The published operation, or (unknown) method + path with ids as {} and no quota."""
        method = method.upper()
        first = path.split("/", 2)[1] if path.count("/") >= 1 else ""
        for pattern, operation in self.index.get((method, first), ()):
            if pattern.match(path):
                return operation
        return Operation(f"{method} {unknown_template(path)}", "other")

    def described(self) -> tuple[tuple[str, Quota], ...]:
        """Every published limit as ("getOrders GET /orders/v0/orders", quota)."""
        found = []
        for name, method, template, rate, burst, app_rate in USAGE_PLANS:
            found.append((f"{name} {method} {template}", Quota(float(rate), burst)))
            if app_rate is not None:
                found.append((f"{name} {method} {template}", Quota(float(app_rate), burst, Scope.APP)))
        return tuple(found)


def unknown_template(path: str) -> str:
    """A path with the segments that look like ids (a digit, not a version) as {}."""
    return "/".join(
        "{}" if any(c.isdigit() for c in part) and not VERSION.match(part) else part
        for part in path.split("/")
    )

"""Profile prices: from posehub.yaml, refreshed from the AWS Price List API.

``refresh_prices(cfg, boto3.client("pricing", region_name="us-east-1"))``
asks, for every profile with an ``aws_instance_type``, for the On-Demand price
of a Linux, shared-tenancy instance without pre-installed software in the
configured region, and returns the changes; :func:`apply_prices` writes them
into a copy of the config data (the CLI saves it). The Price List API is served
only from us-east-1, eu-central-1 and ap-south-1; the region priced is a filter.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from decimal import Decimal

from botocore.exceptions import BotoCoreError, ClientError

from .money import to_amount

REGION_LOCATIONS = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)",
    "ca-central-1": "Canada (Central)",
    "eu-west-1": "EU (Ireland)",
    "eu-west-2": "EU (London)",
    "eu-west-3": "EU (Paris)",
    "eu-central-1": "EU (Frankfurt)",
    "eu-north-1": "EU (Stockholm)",
    "ap-south-1": "Asia Pacific (Mumbai)",
    "ap-northeast-1": "Asia Pacific (Tokyo)",
    "ap-northeast-2": "Asia Pacific (Seoul)",
    "ap-southeast-1": "Asia Pacific (Singapore)",
    "ap-southeast-2": "Asia Pacific (Sydney)",
    "sa-east-1": "South America (Sao Paulo)",
}


class PricingError(Exception):
    """A price that could not be found or read; ``str(err)`` names the instance type and region."""


@dataclass(frozen=True)
class PriceUpdate:
    slug: str
    instance_type: str
    old: Decimal
    new: Decimal

    @property
    def changed(self) -> bool:
        return self.old != self.new


def _data(cfg) -> dict:
    return getattr(cfg, "data", cfg)


def profile_prices(cfg) -> dict[str, Decimal]:
    """``{slug: price per hour}`` of the profiles in posehub.yaml, as Decimals."""
    return {p["slug"]: to_amount(p["price_per_hour"], f"price_per_hour of profile {p['slug']!r}")
            for p in _data(cfg)["profiles"]}


def price_filters(instance_type: str, location: str) -> list[dict]:
    """The ``get_products`` filters for one On-Demand Linux instance type in one location."""
    fields = {
        "instanceType": instance_type, "location": location, "operatingSystem": "Linux",
        "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used",
    }
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in fields.items()]


def on_demand_usd_per_hour(item) -> Decimal | None:
    """The On-Demand USD price per hour in one Price List item (a JSON string or dict); None if absent."""
    doc = json.loads(item) if isinstance(item, str) else item
    for term in (doc.get("terms", {}).get("OnDemand") or {}).values():
        for dim in (term.get("priceDimensions") or {}).values():
            usd = (dim.get("pricePerUnit") or {}).get("USD")
            if usd is not None and dim.get("unit", "").lower() in ("hrs", "hours", "hour"):
                return Decimal(usd)
    return None


def _operation(item) -> str:
    doc = json.loads(item) if isinstance(item, str) else item
    return doc.get("product", {}).get("attributes", {}).get("operation", "")


def instance_price(pricing_client, instance_type: str, location: str) -> Decimal:
    """On-Demand USD per hour of ``instance_type`` in ``location``; :class:`PricingError` if none or ambiguous."""
    items = []
    try:
        pages = pricing_client.get_paginator("get_products").paginate(
            ServiceCode="AmazonEC2", FormatVersion="aws_v1", Filters=price_filters(instance_type, location))
        for page in pages:
            items.extend(page.get("PriceList", []))
    except (ClientError, BotoCoreError) as e:
        raise PricingError(f"AWS Price List API: cannot get the price of {instance_type} in {location}: {e}") from e
    plain = [i for i in items if _operation(i) in ("", "RunInstances")] or items
    prices = {p for p in (on_demand_usd_per_hour(i) for i in plain) if p is not None}
    if not prices:
        raise PricingError(f"AWS Price List API has no On-Demand Linux price for {instance_type} in {location}")
    if len(prices) > 1:
        listed = ", ".join(str(p) for p in sorted(prices))
        raise PricingError(f"AWS Price List API gives several prices for {instance_type} in {location}: {listed}")
    return prices.pop().normalize()


def refresh_prices(cfg, pricing_client, *, region: str = "us-east-1", location: str | None = None) -> list[PriceUpdate]:
    """Current AWS prices of every profile that names an ``aws_instance_type``, in config order.

    ``region`` is where the instances run (its Price List ``location`` is looked
    up in :data:`REGION_LOCATIONS`, or pass ``location``). Nothing is written.
    """
    if location is None:
        if region not in REGION_LOCATIONS:
            raise ValueError(f"unknown AWS region {region!r} (known: {', '.join(REGION_LOCATIONS)}); pass location=")
        location = REGION_LOCATIONS[region]
    current = profile_prices(cfg)
    cache: dict[str, Decimal] = {}
    updates = []
    for p in _data(cfg)["profiles"]:
        itype = p.get("aws_instance_type") or ""
        if not itype:
            continue
        if itype not in cache:
            cache[itype] = instance_price(pricing_client, itype, location)
        updates.append(PriceUpdate(p["slug"], itype, current[p["slug"]], cache[itype]))
    return updates


def apply_prices(data: dict, updates: list[PriceUpdate]) -> dict:
    """A copy of config ``data`` with ``price_per_hour`` set from ``updates`` (floats, as YAML holds them)."""
    new = copy.deepcopy(_data(data))
    by_slug = {u.slug: u.new for u in updates}
    for p in new["profiles"]:
        if p["slug"] in by_slug:
            p["price_per_hour"] = float(by_slug[p["slug"]])
    return new

"""Profile prices from the AWS Price List API.

moto (5.2.5) has no Price List backend (``get_products`` answers 404 "Not yet
implemented"), so the API is played by botocore's Stubber on a real ``pricing``
client: requests are validated against the service model and no network is
used. The item below has the shape of a real ``get_products`` answer; $0.0416
is the published On-Demand Linux price of t3.medium in us-east-1.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal

import boto3
import pytest
from botocore.stub import Stubber

from cost_reports.prices import PriceUpdate, PricingError, apply_prices, price_filters, profile_prices, refresh_prices

D = Decimal
VIRGINIA = "US East (N. Virginia)"


def item(instance_type: str, usd: str, location: str = VIRGINIA, operation: str = "RunInstances") -> str:
    sku = f"SKU-{instance_type}-{operation}-{usd}"
    return json.dumps({
        "product": {"productFamily": "Compute Instance", "sku": sku, "attributes": {
            "instanceType": instance_type, "location": location, "operatingSystem": "Linux", "tenancy": "Shared",
            "preInstalledSw": "NA", "capacitystatus": "Used", "operation": operation}},
        "serviceCode": "AmazonEC2",
        "terms": {
            "OnDemand": {f"{sku}.JRTCKXETXF": {"sku": sku, "priceDimensions": {f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                "unit": "Hrs", "pricePerUnit": {"USD": usd},
                "description": f"${usd} per On Demand Linux {instance_type} Instance Hour"}}}},
            "Reserved": {"x": {"priceDimensions": {"y": {"unit": "Quantity", "pricePerUnit": {"USD": "300"}}}}}},
    })


CONFIG = {"profiles": [
    {"slug": "cpu-small", "price_per_hour": 0.05, "aws_instance_type": "t3.medium"},
    {"slug": "gpu", "price_per_hour": 1.21, "aws_instance_type": "g4dn.xlarge"},
    {"slug": "cpu-small-2", "price_per_hour": 0.05, "aws_instance_type": "t3.medium"},
    {"slug": "local", "price_per_hour": 0},
]}


@pytest.fixture
def pricing():
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def expect(stub, instance_type, items, location=VIRGINIA):
    stub.add_response("get_products", {"PriceList": items, "FormatVersion": "aws_v1"},
                      {"ServiceCode": "AmazonEC2", "FormatVersion": "aws_v1",
                       "Filters": price_filters(instance_type, location)})


def test_refresh_and_apply(pricing):
    client, stub = pricing
    # t3.medium: the plain RunInstances item counts, not the one with SQL Server (RunInstances:0004)
    expect(stub, "t3.medium", [item("t3.medium", "0.0416000000"),
                               item("t3.medium", "0.1200000000", operation="RunInstances:0004")])
    expect(stub, "g4dn.xlarge", [item("g4dn.xlarge", "0.5260000000")])  # asked once for both t3.medium profiles
    updates = refresh_prices(CONFIG, client)
    assert updates == [
        PriceUpdate("cpu-small", "t3.medium", D("0.05"), D("0.0416")),
        PriceUpdate("gpu", "g4dn.xlarge", D("1.21"), D("0.526")),
        PriceUpdate("cpu-small-2", "t3.medium", D("0.05"), D("0.0416")),
    ]
    assert all(u.changed for u in updates)
    before = copy.deepcopy(CONFIG)
    new = apply_prices(CONFIG, updates)
    assert CONFIG == before  # a copy is changed, not the config
    assert [p["price_per_hour"] for p in new["profiles"]] == [0.0416, 0.526, 0.0416, 0]
    assert profile_prices(new) == {"cpu-small": D("0.0416"), "gpu": D("0.526"), "cpu-small-2": D("0.0416"), "local": D(0)}


def test_other_region(pricing):
    client, stub = pricing
    cfg = {"profiles": [{"slug": "gpu", "price_per_hour": "0.587", "aws_instance_type": "g4dn.xlarge"}]}
    expect(stub, "g4dn.xlarge", [item("g4dn.xlarge", "0.5870000000", "EU (Ireland)")], location="EU (Ireland)")
    [u] = refresh_prices(cfg, client, region="eu-west-1")
    assert (u.old, u.new, u.changed) == (D("0.587"), D("0.587"), False)
    with pytest.raises(ValueError) as e:
        refresh_prices(cfg, client, region="mars-1")
    assert str(e.value).startswith("unknown AWS region 'mars-1' (known: us-east-1, us-east-2, ")
    assert str(e.value).endswith(", sa-east-1); pass location=")


def test_unknown_instance_type(pricing):
    client, stub = pricing
    expect(stub, "t3.huge", [])
    with pytest.raises(PricingError) as e:
        refresh_prices({"profiles": [{"slug": "x", "price_per_hour": 1, "aws_instance_type": "t3.huge"}]}, client)
    assert str(e.value) == "AWS Price List API has no On-Demand Linux price for t3.huge in US East (N. Virginia)"


def test_several_prices(pricing):
    client, stub = pricing
    expect(stub, "t3.medium", [item("t3.medium", "0.0416"), item("t3.medium", "0.05")])
    with pytest.raises(PricingError) as e:
        refresh_prices({"profiles": [CONFIG["profiles"][0]]}, client)
    assert str(e.value) == "AWS Price List API gives several prices for t3.medium in US East (N. Virginia): 0.0416, 0.05"


def test_api_error(pricing):
    client, stub = pricing
    stub.add_client_error("get_products", "AccessDeniedException", "not allowed", 400)
    with pytest.raises(PricingError) as e:
        refresh_prices({"profiles": [CONFIG["profiles"][0]]}, client)
    assert str(e.value) == ("AWS Price List API: cannot get the price of t3.medium in US East (N. Virginia): "
                            "An error occurred (AccessDeniedException) when calling the GetProducts operation: not allowed")

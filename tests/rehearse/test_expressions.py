"""ARM template expressions as Resource Manager evaluates them (the rehearsal's evaluator),
checked on Microsoft's documented examples of each function cloudhpc's templates use."""

from __future__ import annotations

import pytest

from cloudhpc.rehearse.expressions import Context, Evaluator, ExpressionError

SUB, RG = "00000000-0000-0000-0000-000000000001", "rg-x"


def ev(**params: object) -> Evaluator:
    return Evaluator(Context(SUB, RG, "eastus", dict(params),
                             {"v": "[concat('a-', parameters('p'))]", "w": "[variables('v')]"},
                             reference=lambda rid: {"principalId": f"pid:{rid}"}))


@pytest.mark.parametrize(("expression", "expected"), [
    ("[concat('a', 'b', 'c')]", "abc"),
    ("[concat('it''s', ' ok')]", "it's ok"),  # '' is a quote inside a string
    ("[[not an expression]", "[not an expression]"),  # [[ escapes a literal bracket
    ("plain text", "plain text"),
    ("[parameters('p')]", "P"),
    ("[variables('w')]", "a-P"),  # variables of variables
    ("[base64('hello')]", "aGVsbG8="),
    ("[toLower('ABC')]", "abc"),
    ("[resourceId('Microsoft.Network/virtualNetworks/subnets', 'vnet', 'sub')]",
     f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/"
     "virtualNetworks/vnet/subnets/sub"),
    ("[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'r')]",
     f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/r"),
    ("[resourceGroup().name]", RG),
    ("[reference(resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', 'i'))"
     ".principalId]",
     f"pid:/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
     "Microsoft.ManagedIdentity/userAssignedIdentities/i"),
    ("[length(concat('ab', 'cd'))]", 4),
    ("[if(equals(parameters('p'), 'P'), 'yes', 'no')]", "yes"),
])
def test_functions(expression: str, expected: object) -> None:
    assert ev(p="P").string(expression) == expected


def test_unique_string_and_guid_are_deterministic_and_shaped_like_azures() -> None:
    a = ev().string("[uniqueString(resourceGroup().id, 'x')]")
    assert a == ev().string("[uniqueString(resourceGroup().id, 'x')]")
    assert len(a) == 13 and a.isalnum() and a.islower()
    g = ev().string("[guid('a', 'b')]")
    assert len(g) == 36 and g.count("-") == 4


@pytest.mark.parametrize("expression", [
    "[nosuchfunction('a')]", "[parameters('missing')]", "[concat('a']",
    "[resourceId('Microsoft.Network/virtualNetworks/subnets', 'only-one')]",
    "[resourceGroup().nosuchproperty]",
])
def test_what_resource_manager_refuses(expression: str) -> None:
    with pytest.raises(ExpressionError):
        ev().string(expression)


def test_property_names_are_expressions_too() -> None:
    """A user-assigned identity is named by its resource id as a property name; the
    rehearsal left such names unevaluated, so instance metadata never found the head's
    identity (found by the staging test of finding 10)."""
    body = {"userAssignedIdentities": {
        "[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', 'id1')]": {}}}
    assert ev(p="P").value(body) == {"userAssignedIdentities": {
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/id1": {}}}

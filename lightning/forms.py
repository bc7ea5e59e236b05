from django import forms


class DepositForm(forms.Form):
    amount_sat = forms.IntegerField(
        min_value=1,
        required=False,
        help_text="Leave empty for an invoice the payer chooses the amount of.",
        widget=forms.NumberInput(attrs={"placeholder": "e.g. 21000"}),
    )
    memo = forms.CharField(max_length=500, required=False)


class WithdrawForm(forms.Form):
    bolt11 = forms.CharField(
        label="Lightning invoice",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "lnbcrt1..."}),
        max_length=4000,
    )
    amount_sat = forms.IntegerField(
        min_value=1, required=False, help_text="Only for an invoice without an amount."
    )

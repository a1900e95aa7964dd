"""Password rules beyond Django's built-in validators."""

import string

from django.core.exceptions import ValidationError

_CLASSES = {
    "a lowercase letter": set(string.ascii_lowercase),
    "an uppercase letter": set(string.ascii_uppercase),
    "a digit": set(string.digits),
    "a symbol": set(string.punctuation + " "),
}


class CharacterClassValidator:
    """At least three of: lowercase, uppercase, digit, symbol."""

    required = 3

    def validate(self, password: str, user: object = None) -> None:
        missing = [name for name, chars in _CLASSES.items() if not chars.intersection(password)]
        if len(_CLASSES) - len(missing) < self.required:
            raise ValidationError(
                "This password must mix at least three of: lowercase letters, uppercase "
                f"letters, digits and symbols (it lacks {', '.join(missing)}).",
                code="password_too_simple",
            )

    def get_help_text(self) -> str:
        return "Mix at least three of: lowercase letters, uppercase letters, digits, symbols."

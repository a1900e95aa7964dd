"""First-run wizard: `manage.py setup` (interactive) or `manage.py setup --no-input ...`."""

import getpass
import json
import os
import sys
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import logic
from providers.specs import SPECS

SETUP_PROVIDER_TYPES = logic.SETUP_PROVIDER_TYPES


class Command(BaseCommand):
    help = "Create the first admin, name the site, and optionally add a provider and a key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-input", action="store_false", dest="interactive")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")
        parser.add_argument("--admin-email")
        parser.add_argument(
            "--admin-password",
            help="Or set THINKWATCH_ADMIN_PASSWORD (keeps it out of the process list).",
        )
        parser.add_argument("--site-name", default=None)
        parser.add_argument("--provider-type", choices=SETUP_PROVIDER_TYPES)
        parser.add_argument("--provider-name")
        parser.add_argument("--provider-base-url", default="")
        parser.add_argument("--provider-api-key", help="Or set THINKWATCH_PROVIDER_API_KEY.")
        parser.add_argument("--issue-key", metavar="NAME", help="Issue a first key with this name.")

    def handle(self, *args: Any, **options: Any) -> None:
        if logic.admin_exists():
            raise CommandError(
                "ThinkWatch is already set up: an admin account exists. Sign in to the console "
                f"(port {settings.CONSOLE_PORT}) to make changes."
            )
        if options["interactive"]:
            if not sys.stdin.isatty():
                raise CommandError("No terminal to ask on: run with --no-input and the flags.")
            self._ask(options)
        values = self._collect(options)
        try:
            result = logic.initialize_site(**values)
        except logic.SetupRefused as exc:
            raise CommandError(str(exc)) from None
        except ValidationError as exc:
            raise CommandError(_describe(exc)) from None
        self._report(result, as_json=options["json"])

    def _ask(self, options: dict[str, Any]) -> None:
        ask = _prompt
        options["admin_email"] = ask("Admin email", options["admin_email"])
        while not options["admin_password"]:
            first = getpass.getpass("Admin password: ")
            problems = logic.validate_admin(options["admin_email"], first).get("admin_password")
            if problems:
                self.stderr.write("\n".join(problems))
            elif getpass.getpass("Admin password (again): ") != first:
                self.stderr.write("The passwords differ.")
            else:
                options["admin_password"] = first
        options["site_name"] = ask("Site name", options["site_name"] or "ThinkWatch")
        if not options["provider_type"] and ask("Add a provider now? (y/n)", "y").lower() == "y":
            options["provider_type"] = ask("Provider type (openai / openai_compatible)", "openai")
            options["provider_name"] = ask(
                "Provider name", SPECS[options["provider_type"]].label.split(" ")[0]
            )
            default_url = SPECS[options["provider_type"]].default_base_url
            options["provider_base_url"] = ask(
                "Base URL", options["provider_base_url"] or default_url
            )
            options["provider_api_key"] = getpass.getpass(
                "Provider API key (hidden, may be empty): "
            )
        if not options["issue_key"] and ask("Issue a first API key? (y/n)", "y").lower() == "y":
            options["issue_key"] = ask("Key name", "admin")

    def _collect(self, options: dict[str, Any]) -> dict[str, Any]:
        email = (options["admin_email"] or "").strip()
        password = options["admin_password"] or os.environ.get("THINKWATCH_ADMIN_PASSWORD", "")
        problems = logic.validate_admin(email, password)
        site_name = (options["site_name"] or "ThinkWatch").strip()
        if not site_name:
            problems["site_name"] = ["Give the site a name."]
        provider = None
        if options["provider_type"]:
            provider = {
                "type": options["provider_type"],
                "name": (options["provider_name"] or "").strip(),
                "base_url": (options["provider_base_url"] or "").strip(),
                "api_key": options["provider_api_key"]
                or os.environ.get("THINKWATCH_PROVIDER_API_KEY", ""),
            }
            if not provider["name"]:
                problems["provider_name"] = ["--provider-name is required with --provider-type."]
        elif options["provider_name"] or options["provider_base_url"]:
            problems["provider_type"] = ["--provider-type is required to add a provider."]
        if options["issue_key"] is not None and not options["issue_key"].strip():
            problems["issue_key"] = ["Give the key a name."]
        if problems:
            raise CommandError(_describe(ValidationError(problems)))
        return {
            "admin_email": email,
            "admin_password": password,
            "site_name": site_name,
            "provider": provider,
            "key_name": (options["issue_key"] or "").strip() or None,
        }

    def _report(self, result: logic.SetupResult, as_json: bool) -> None:
        provider, key = result.provider, result.key
        summary = {
            "admin": {"id": result.admin.pk, "email": result.admin.email},
            "site_name": result.organisation.name,
            "provider": (
                {
                    "id": provider.pk,
                    "name": provider.name,
                    "type": provider.type,
                    "base_url": provider.effective_base_url,
                }
                if provider
                else None
            ),
            "key": (
                {"id": key.pk, "name": key.name, "prefix": key.prefix, "surfaces": key.surfaces}
                if key
                else None
            ),
            "api_key": result.api_key,
        }
        if as_json:
            self.stdout.write(json.dumps(summary))
            return
        self.stdout.write(self.style.SUCCESS(f"Admin {result.admin.email} created."))
        if provider:
            self.stdout.write(f"Provider {provider.name} ({provider.type}) added.")
        if result.api_key:
            self.stdout.write(
                f"API key '{key.name}' (shown once, store it now):\n  {result.api_key}"  # type: ignore[union-attr]
            )


def _prompt(question: str, default: str | None) -> str:
    suffix = f" [{default}]" if default else ""
    answer = input(f"{question}{suffix}: ").strip()
    return answer or (default or "")


def _describe(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        lines = [f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items()]
        return "Setup not done:\n  " + "\n  ".join(lines)
    return "Setup not done: " + " ".join(error.messages)

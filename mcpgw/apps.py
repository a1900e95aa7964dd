from django.apps import AppConfig


class McpGatewayConfig(AppConfig):
    name = "mcpgw"
    verbose_name = "MCP gateway"

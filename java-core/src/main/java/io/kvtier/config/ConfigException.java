package io.kvtier.config;

/**
 * A configuration value or key that is not allowed. The message names the key, the value, where it
 * came from and what is allowed.
 */
public final class ConfigException extends IllegalArgumentException {
  private static final long serialVersionUID = 1L;

  /** Creates an exception with a message that already names key, value and what is allowed. */
  public ConfigException(String message) {
    super(message);
  }
}

package io.kvtier;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;

/**
 * Captures every log record of the JVM (the root {@code java.util.logging} logger, which kvtier's
 * {@code System.Logger}s and, through slf4j-jdk14, Lettuce and Netty log to) while open, each as
 * the text a log file would show: level, logger, message with its parameters, and the stack trace
 * of the exception with all its causes. Thread-safe.
 */
public final class LogCapture extends Handler implements AutoCloseable {
  private final Logger root = Logger.getLogger("");
  private final Level rootLevel = root.getLevel();
  private final List<String> records = new CopyOnWriteArrayList<>();

  /** Starts capturing, at every level. */
  public LogCapture() {
    setLevel(Level.ALL);
    root.setLevel(Level.ALL);
    root.addHandler(this);
  }

  @Override
  public void publish(LogRecord r) {
    StringBuilder sb =
        new StringBuilder(r.getLevel().getName())
            .append(' ')
            .append(r.getLoggerName())
            .append(": ")
            .append(new java.util.logging.SimpleFormatter().formatMessage(r));
    if (r.getThrown() != null) {
      StringWriter w = new StringWriter();
      r.getThrown().printStackTrace(new PrintWriter(w));
      sb.append('\n').append(w);
    }
    records.add(sb.toString());
  }

  /** The records captured so far. */
  public List<String> records() {
    return List.copyOf(records);
  }

  /** The records captured so far, joined by newlines. */
  public String text() {
    return String.join("\n", records);
  }

  @Override
  public void flush() {}

  /** Stops capturing and restores the root logger's level. */
  @Override
  public void close() {
    root.removeHandler(this);
    root.setLevel(rootLevel);
  }
}
